//! HTTP mapping of the task queue's core.

use crate::core::{ApprovalBody, MAX_ENQUEUE_BATCH, TaskListQuery, TaskQueue};
use crate::leases::{
    AwaitBody, ClaimBody, CompleteBody, CompletionResult, CompletionsBody, ExtendBody, FailBody,
    FailReply, MAX_COMPLETE_BATCH, PageQuery,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_service::openapi::{Op, document};
use mesh_service::{ApiError, Caller, IdPath, JsonBody, QueryParams, ServiceName};
use mesh_types::queue::Lease;
use mesh_types::task::QueueStats;
use mesh_types::{NewTask, Page, Permission, Task};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router(core: Arc<TaskQueue>) -> Router {
    let auth = core.context().auth.clone();
    let api = Router::new()
        .route(
            "/api/v1/queue/tasks",
            post(enqueue)
                .route_layer(auth.require(Permission::TaskSubmit))
                .merge(get(list).route_layer(auth.require(Permission::TaskRead))),
        )
        .route(
            "/api/v1/queue/tasks/batch",
            post(enqueue_batch).route_layer(auth.require(Permission::TaskSubmit)),
        )
        .route(
            "/api/v1/queue/completions",
            post(complete_batch).route_layer(auth.require(Permission::TaskClaim)),
        )
        .route(
            "/api/v1/queue/tasks/{id}",
            get(get_task).route_layer(auth.require(Permission::TaskRead)),
        )
        .route(
            "/api/v1/queue/tasks/{id}/cancel",
            post(cancel).route_layer(auth.require(Permission::TaskCancel)),
        )
        .route(
            "/api/v1/queue/stats",
            get(stats).route_layer(auth.require(Permission::TaskRead)),
        )
        .route(
            "/api/v1/queue/claim",
            post(claim).route_layer(auth.require(Permission::TaskClaim)),
        )
        .route(
            "/api/v1/queue/tasks/{id}/heartbeat",
            post(extend).route_layer(auth.require(Permission::TaskClaim)),
        )
        .route(
            "/api/v1/queue/tasks/{id}/complete",
            post(complete).route_layer(auth.require(Permission::TaskClaim)),
        )
        .route(
            "/api/v1/queue/tasks/{id}/yield",
            post(yield_task).route_layer(auth.require(Permission::TaskClaim)),
        )
        .route(
            "/api/v1/queue/tasks/{id}/await-children",
            post(await_children).route_layer(auth.require(Permission::TaskClaim)),
        )
        .route(
            "/api/v1/queue/tasks/{id}/fail",
            post(fail).route_layer(auth.require(Permission::TaskClaim)),
        )
        .route(
            "/api/v1/queue/approvals/{id}/approve",
            post(approve).route_layer(auth.require(Permission::ApprovalDecide)),
        )
        .route(
            "/api/v1/queue/approvals/{id}/reject",
            post(reject).route_layer(auth.require(Permission::ApprovalDecide)),
        )
        .route(
            "/api/v1/queue/dead-letters",
            get(dead_letters).route_layer(auth.require(Permission::TaskRead)),
        )
        .route(
            "/api/v1/queue/dead-letters/{id}/requeue",
            post(requeue).route_layer(auth.require(Permission::TaskRequeue)),
        )
        .with_state(core.clone());
    mesh_service::server::finish_router(core.context(), api, openapi())
}

async fn enqueue(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    JsonBody(new): JsonBody<NewTask>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let task = core.enqueue(&caller.principal, new).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

/// `{"tasks": [...]}`, stored all or none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    tasks: Vec<NewTask>,
}

async fn enqueue_batch(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tasks = core.enqueue_batch(&caller.principal, body.tasks).await?;
    Ok((StatusCode::CREATED, Json(json!({ "tasks": tasks }))))
}

async fn complete_batch(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    JsonBody(body): JsonBody<CompletionsBody>,
) -> Result<Json<Value>, ApiError> {
    let results: Vec<CompletionResult> = core.complete_batch(&caller, body).await?;
    Ok(Json(json!({ "results": results })))
}

async fn list(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    QueryParams(query): QueryParams<TaskListQuery>,
) -> Result<Json<Page<Task>>, ApiError> {
    Ok(Json(core.list(&caller.principal, query).await?))
}

async fn get_task(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(core.get(&caller.principal, id).await?))
}

async fn cancel(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(core.cancel(&caller.principal, id).await?))
}

async fn approve(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    IdPath(id): IdPath,
    body: axum::body::Bytes,
) -> Result<Json<Task>, ApiError> {
    let body = ApprovalBody::from_bytes(&body)?;
    Ok(Json(
        core.resolve_approval(&caller.principal, id, true, body.note)
            .await?,
    ))
}

async fn reject(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    IdPath(id): IdPath,
    body: axum::body::Bytes,
) -> Result<Json<Task>, ApiError> {
    let body = ApprovalBody::from_bytes(&body)?;
    Ok(Json(
        core.resolve_approval(&caller.principal, id, false, body.note)
            .await?,
    ))
}

async fn claim(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    JsonBody(body): JsonBody<ClaimBody>,
) -> Result<Json<Vec<Lease>>, ApiError> {
    Ok(Json(core.claim(&caller, body).await?))
}

async fn extend(
    State(core): State<Arc<TaskQueue>>,
    _caller: Caller,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<ExtendBody>,
) -> Result<Json<Lease>, ApiError> {
    Ok(Json(core.extend(id, body).await?))
}

async fn complete(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<CompleteBody>,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(core.complete(&caller, id, body).await?))
}

async fn yield_task(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<ExtendBody>,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(core.yield_task(&caller, id, body).await?))
}

async fn await_children(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<AwaitBody>,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(core.await_children(&caller, id, body).await?))
}

async fn fail(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<FailBody>,
) -> Result<Json<FailReply>, ApiError> {
    Ok(Json(core.fail(&caller, id, body).await?))
}

async fn dead_letters(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<Page<Task>>, ApiError> {
    Ok(Json(core.dead_letters(&caller, query).await?))
}

async fn requeue(
    State(core): State<Arc<TaskQueue>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(core.requeue(&caller, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    #[serde(rename = "type")]
    task_type: String,
    #[serde(default)]
    priority: i32,
}

async fn stats(
    State(core): State<Arc<TaskQueue>>,
    _caller: Caller,
    QueryParams(q): QueryParams<StatsQuery>,
) -> Result<Json<QueueStats>, ApiError> {
    Ok(Json(core.stats(&q.task_type, q.priority).await?))
}

/// JSON Schema of a task submission, shared with the orchestrator's document.
pub fn new_task_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "input"],
        "additionalProperties": false,
        "properties": {
            "type": {"type": "string", "maxLength": 64},
            "input": {"description": "Any JSON value but null"},
            "priority": {"type": "integer", "minimum": -1000, "maximum": 1000, "default": 0},
            "metadata": {"type": "object"},
            "riskTier": {"enum": ["low", "medium", "high", "critical"], "default": "low"},
            "dataClassification": {"enum": ["public", "internal", "confidential", "restricted"], "default": "internal"},
            "parentId": {"type": "string", "format": "uuid"},
            "deadline": {"type": "string", "format": "date-time", "description": "Must have started by then, else it fails with slo_timeout"},
            "idempotencyKey": {"type": "string", "maxLength": 128, "description": "Resubmitting with the same key returns the first task"},
        },
    })
}

pub fn openapi() -> Value {
    document(
        ServiceName::TaskQueue,
        &[
            Op {
                method: "post",
                path: "/api/v1/queue/tasks",
                summary: "Create and enqueue a task in one transaction",
                permission: Some(Permission::TaskSubmit),
                request: Some(new_task_schema()),
                success: (201, "The stored task"),
            },
            Op {
                method: "post",
                path: "/api/v1/queue/tasks/batch",
                summary: "Create and enqueue several tasks in one transaction, all or none (400/403 name tasks[i])",
                permission: Some(Permission::TaskSubmit),
                request: Some(json!({
                    "type": "object",
                    "required": ["tasks"],
                    "additionalProperties": false,
                    "properties": {"tasks": {"type": "array", "minItems": 1, "maxItems": MAX_ENQUEUE_BATCH, "items": new_task_schema()}},
                })),
                success: (201, "{tasks}: the stored tasks, in order"),
            },
            Op {
                method: "get",
                path: "/api/v1/queue/tasks",
                summary: "List tasks (filters: status, type, parentId; cursor pagination)",
                permission: Some(Permission::TaskRead),
                request: None,
                success: (200, "A page of tasks"),
            },
            Op {
                method: "get",
                path: "/api/v1/queue/tasks/{id}",
                summary: "Get a task",
                permission: Some(Permission::TaskRead),
                request: None,
                success: (200, "The task"),
            },
            Op {
                method: "post",
                path: "/api/v1/queue/tasks/{id}/cancel",
                summary: "Cancel a task and its unfinished subtasks",
                permission: Some(Permission::TaskCancel),
                request: None,
                success: (200, "The cancelled task"),
            },
            Op::guarded(
                "post",
                "/api/v1/queue/claim",
                "Lease up to `limit` tasks of `taskTypes` to agent `agentId` (empty list when none)",
                Permission::TaskClaim,
                Some(
                    json!({"type": "object", "required": ["agentId", "taskTypes"], "properties": {"agentId": {"type": "string", "format": "uuid"}, "taskTypes": {"type": "array", "items": {"type": "string"}}, "limit": {"type": "integer", "minimum": 1, "maximum": 100}, "leaseMs": {"type": "integer"}}}),
                ),
                (200, "Leases: {task, leaseToken, attempt, leaseExpiresAt}"),
            ),
            Op::guarded(
                "post",
                "/api/v1/queue/tasks/{id}/heartbeat",
                "Extend a lease (409 if the token is stale)",
                Permission::TaskClaim,
                Some(
                    json!({"type": "object", "required": ["leaseToken"], "properties": {"leaseToken": {"type": "string", "format": "uuid"}, "leaseMs": {"type": "integer"}}}),
                ),
                (200, "The extended lease"),
            ),
            Op::guarded(
                "post",
                "/api/v1/queue/tasks/{id}/complete",
                "Complete a leased task (409 if the token is stale)",
                Permission::TaskClaim,
                Some(
                    json!({"type": "object", "required": ["leaseToken"], "properties": {"leaseToken": {"type": "string", "format": "uuid"}, "output": {}}}),
                ),
                (200, "The completed task"),
            ),
            Op::guarded(
                "post",
                "/api/v1/queue/completions",
                "Complete several leased tasks in one transaction; each stands alone",
                Permission::TaskClaim,
                Some(json!({
                    "type": "object",
                    "required": ["completions"],
                    "additionalProperties": false,
                    "properties": {"completions": {"type": "array", "minItems": 1, "maxItems": MAX_COMPLETE_BATCH, "items": {
                        "type": "object", "required": ["taskId", "leaseToken"], "additionalProperties": false,
                        "properties": {"taskId": {"type": "string", "format": "uuid"}, "leaseToken": {"type": "string", "format": "uuid"}, "output": {}},
                    }}},
                })),
                (
                    200,
                    "{results: [{taskId, task} | {taskId, error: {status, code, message}}]}, in order",
                ),
            ),
            Op::guarded(
                "post",
                "/api/v1/queue/tasks/{id}/yield",
                "Give a leased task back (cooperative preemption): re-queued, no attempt spent",
                Permission::TaskClaim,
                Some(
                    json!({"type": "object", "required": ["leaseToken"], "properties": {"leaseToken": {"type": "string", "format": "uuid"}, "leaseMs": {"type": "integer"}}}),
                ),
                (200, "The re-queued task"),
            ),
            Op::guarded(
                "post",
                "/api/v1/queue/tasks/{id}/await-children",
                "Park a leased task until its subtasks finish; it resumes with their results",
                Permission::TaskClaim,
                Some(
                    json!({"type": "object", "required": ["leaseToken"], "properties": {"leaseToken": {"type": "string", "format": "uuid"}, "output": {}}}),
                ),
                (200, "The waiting task"),
            ),
            Op::guarded(
                "post",
                "/api/v1/queue/tasks/{id}/fail",
                "Fail an attempt: retry after backoff, or dead-letter",
                Permission::TaskClaim,
                Some(
                    json!({"type": "object", "required": ["leaseToken", "reason"], "properties": {"leaseToken": {"type": "string", "format": "uuid"}, "reason": {"type": "string"}, "retryable": {"type": "boolean", "default": true}}}),
                ),
                (200, "{task, outcome: retrying|dead_lettered}"),
            ),
            Op::guarded(
                "get",
                "/api/v1/queue/dead-letters",
                "Failed tasks",
                Permission::TaskRead,
                None,
                (200, "A page of tasks"),
            ),
            Op::guarded(
                "post",
                "/api/v1/queue/dead-letters/{id}/requeue",
                "Put a dead letter back in the queue with fresh attempts",
                Permission::TaskRequeue,
                None,
                (200, "The re-queued task"),
            ),
            Op::guarded(
                "post",
                "/api/v1/queue/approvals/{id}/approve",
                "Queue a task a policy escalated (body {note} optional)",
                Permission::ApprovalDecide,
                None,
                (200, "The queued task"),
            ),
            Op::guarded(
                "post",
                "/api/v1/queue/approvals/{id}/reject",
                "Cancel a task a policy escalated (body {note} optional)",
                Permission::ApprovalDecide,
                None,
                (200, "The cancelled task"),
            ),
            Op {
                method: "get",
                path: "/api/v1/queue/stats",
                summary: "Queue depth ahead of a task type and priority, and observed durations",
                permission: Some(Permission::TaskRead),
                request: None,
                success: (200, "Queue statistics"),
            },
        ],
    )
}
