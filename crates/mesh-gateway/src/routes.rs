//! HTTP on port 5001: OpenAI's `GET /v1/models` and `POST /v1/chat/completions`.

use crate::{CallContext, ChatRequest, Gateway, RouteRequest};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_service::openapi::{Op, document};
use mesh_service::{ApiError, Caller, JsonBody, ServiceName};
use mesh_types::Permission;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router(core: Arc<Gateway>) -> Router {
    let auth = core.context().auth.clone();
    let api = Router::new()
        .route(
            "/v1/models",
            get(models).route_layer(auth.require(Permission::ModelCall)),
        )
        .route(
            "/v1/chat/completions",
            post(chat).route_layer(auth.require(Permission::ModelCall)),
        )
        .route(
            "/v1/messages",
            post(messages).route_layer(auth.require(Permission::ModelCall)),
        )
        .route(
            "/api/v1/providers",
            get(providers).route_layer(auth.require(Permission::ModelCall)),
        )
        .route(
            "/api/v1/budgets/{scope}",
            get(budget_usage).route_layer(auth.require(Permission::ModelCall)),
        )
        .route(
            "/api/v1/route/task",
            post(route_task).route_layer(auth.require(Permission::ModelCall)),
        )
        .route(
            "/api/v1/route/model",
            post(route_model).route_layer(auth.require(Permission::ModelCall)),
        )
        .with_state(core.clone());
    let doc = document(
        ServiceName::RoutingGateway,
        &[
            Op::guarded(
                "get",
                "/v1/models",
                "Models served (OpenAI list shape)",
                Permission::ModelCall,
                None,
                (200, "{object: list, data}"),
            ),
            Op::guarded(
                "post",
                "/v1/chat/completions",
                "OpenAI Chat Completions (stream=true answers Server-Sent Events); x-mesh-agent-id, x-mesh-task-id, x-mesh-data-classification headers carry mesh context",
                Permission::ModelCall,
                Some(json!({"type": "object", "required": ["model", "messages"]})),
                (200, "chat.completion"),
            ),
            Op::guarded(
                "post",
                "/v1/messages",
                "Anthropic Messages API (stream=true answers Anthropic's events), to any provider",
                Permission::ModelCall,
                Some(json!({"type": "object", "required": ["model", "max_tokens", "messages"]})),
                (200, "message"),
            ),
            Op::guarded(
                "get",
                "/api/v1/providers",
                "Providers with their models, breaker state and observed latency",
                Permission::ModelCall,
                None,
                (200, "{providers, agentsStopped}"),
            ),
            Op::guarded(
                "post",
                "/api/v1/route/model",
                "The routing decision for a request, without calling",
                Permission::ModelCall,
                Some(json!({"type": "object"})),
                (
                    200,
                    "{selectedModel, strategy, confidence, alternatives, reasons, decidedAt}",
                ),
            ),
            Op::guarded(
                "post",
                "/api/v1/route/task",
                "The agent a task would go to, from the agent registry",
                Permission::ModelCall,
                Some(json!({"type": "object"})),
                (
                    200,
                    "{selectedAgent, confidence, alternatives, reasons, decidedAt}",
                ),
            ),
            Op::guarded(
                "get",
                "/api/v1/budgets/{scope}",
                "A budget scope's spend (task:<id>, tenant:<name>[:<YYYY-MM-DD>], tier:<tier>[:<YYYY-MM-DD>]; no day: today)",
                Permission::ModelCall,
                None,
                (200, "budget usage"),
            ),
        ],
    );
    mesh_service::server::finish_router(core.context(), api, doc)
}

async fn models(State(core): State<Arc<Gateway>>, _caller: Caller) -> Json<Value> {
    let data: Vec<Value> = core
        .models()
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// A budget scope's standing (`task:<id>`, `tenant:<name>:<day>`, `tier:<tier>:<day>`).
async fn budget_usage(
    State(core): State<Arc<Gateway>>,
    _caller: Caller,
    axum::extract::Path(scope): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    let today = mesh_types::time::now().format("%Y-%m-%d").to_string();
    let scope = crate::budget::canonical_scope(&scope, &today)
        .map_err(|why| ApiError::invalid("scope", format!("scope: {why}")))?;
    let u = core.context().store.budgets.budget_usage(&scope).await?;
    let money = |m: i64| m as f64 / 1_000_000.0;
    Ok(Json(json!({
        "scope": scope,
        "used": {"tokens": u.used.tokens, "cost": money(u.used.cost_micros)},
        "reserved": {"tokens": u.reserved.tokens, "cost": money(u.reserved.cost_micros)},
    })))
}

/// Which agent should take a described task.
async fn route_task(
    State(core): State<Arc<Gateway>>,
    caller: Caller,
    JsonBody(req): JsonBody<crate::TaskRouteRequest>,
) -> Result<Json<crate::TaskRouteDecision>, ApiError> {
    let decision = core.route_task(&req).await?;
    let event = mesh_types::EventDraft::new(
        "routing_decision",
        &caller.principal.name,
        "agent",
        Some(decision.selected_agent.agent_id.to_string()),
    )
    .payload(json!({
        "taskType": req.task_type, "riskTier": req.risk_tier,
        "selectedAgent": decision.selected_agent, "alternatives": decision.alternatives,
        "reasons": decision.reasons, "confidence": decision.confidence,
    }));
    core.log(event).await;
    Ok(Json(decision))
}

/// The routing decision for a described call, without making it.
async fn route_model(
    State(core): State<Arc<Gateway>>,
    caller: Caller,
    JsonBody(req): JsonBody<RouteRequest>,
) -> Result<Json<crate::RouteDecision>, ApiError> {
    let decision = core.route(&caller.principal, &req)?;
    core.log(core.route_event(&caller.principal, &decision, &req))
        .await;
    Ok(Json(decision))
}

/// Anthropic's Messages API in front of every provider; streams are translated to
/// Anthropic's events as they arrive.
async fn messages(
    State(core): State<Arc<Gateway>>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let call = call_context(&headers)?;
    let request = crate::anthropic::to_chat(body)?;
    if request.stream == Some(true) {
        let body = core
            .chat_stream(&caller.principal, call, request, crate::Protocol::Anthropic)
            .await?;
        return Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response());
    }
    let done = core.complete(&caller.principal, call, request).await?;
    let id = done.id.replacen("chatcmpl-", "msg_", 1);
    let message = crate::anthropic::to_message(&done.completion, &id, &done.model);
    Ok(Json(message).into_response())
}

async fn providers(State(core): State<Arc<Gateway>>, _caller: Caller) -> Json<Value> {
    Json(json!({"providers": core.provider_status(), "agentsStopped": core.stopped_agents()}))
}

async fn chat(
    State(core): State<Arc<Gateway>>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<ChatRequest>,
) -> Result<Response, ApiError> {
    let call = call_context(&headers)?;
    if request.stream == Some(true) {
        let client = crate::Protocol::OpenAi {
            usage: request.wants_stream_usage(),
        };
        let body = core
            .chat_stream(&caller.principal, call, request, client)
            .await?;
        return Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response());
    }
    Ok(Json(core.chat(&caller.principal, call, request).await?).into_response())
}

fn call_context(headers: &HeaderMap) -> Result<CallContext, ApiError> {
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| ApiError::invalid(name, format!("{name}: not text")))
            })
            .transpose()
    };
    let uuid = |name: &str| -> Result<Option<uuid::Uuid>, ApiError> {
        text(name)?
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::invalid(name, format!("{name}: `{v}` is not a UUID")))
            })
            .transpose()
    };
    let classification = text("x-mesh-data-classification")?;
    if let Some(c) = &classification {
        c.parse::<mesh_types::DataClassification>()
            .map_err(|e| ApiError::invalid("x-mesh-data-classification", e.to_string()))?;
    }
    let strategy = text("x-mesh-route-strategy")?;
    let slo = text("x-mesh-slo-ms")?;
    let (strategy, slo_ms) =
        crate::routing::route_from_headers(strategy.as_deref(), slo.as_deref())?;
    Ok(CallContext {
        agent_id: uuid("x-mesh-agent-id")?,
        task_id: uuid("x-mesh-task-id")?,
        data_classification: classification,
        strategy,
        slo_ms,
        task_type: text("x-mesh-task-type")?,
        risk_tier: text("x-mesh-risk-tier")?
            .map(|t| {
                t.parse().map_err(|e: mesh_types::enums::UnknownVariant| {
                    ApiError::invalid("x-mesh-risk-tier", e.to_string())
                })
            })
            .transpose()?,
    })
}
