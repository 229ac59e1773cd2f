use crate::a2a_import::ImportBody;
use crate::agents::{AgentListQuery, AgentRegistry};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_service::openapi::{Op, document};
use mesh_service::{ApiError, Caller, IdPath, JsonBody, QueryParams, ServiceName};
use mesh_types::agent::AgentSummary;
use mesh_types::matching::{MatchQuery, MatchResult};
use mesh_types::{Agent, NewAgent, Page, Permission};
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router(core: Arc<AgentRegistry>) -> Router {
    let auth = core.context().auth.clone();
    let api = Router::new()
        .route(
            "/api/v1/agents",
            post(register)
                .route_layer(auth.require(Permission::AgentRegister))
                .merge(get(list).route_layer(auth.require(Permission::AgentRead))),
        )
        .route(
            "/api/v1/agents/summary",
            get(summary).route_layer(auth.require(Permission::AgentRead)),
        )
        .route(
            "/api/v1/agents/match",
            post(match_agents).route_layer(auth.require(Permission::AgentRead)),
        )
        .route(
            "/api/v1/agents/import",
            post(import).route_layer(auth.require(Permission::AgentRegister)),
        )
        .route(
            "/api/v1/agents/{id}/drain",
            post(drain).route_layer(auth.require(Permission::AgentRetire)),
        )
        .route(
            "/api/v1/agents/{id}",
            get(get_agent).route_layer(auth.require(Permission::AgentRead)),
        )
        .route(
            "/api/v1/agents/{id}/heartbeat",
            post(heartbeat).route_layer(auth.require(Permission::AgentHeartbeat)),
        )
        .route(
            "/api/v1/agents/{id}/secrets/{name}",
            get(read_secret).route_layer(auth.require(Permission::SecretRead)),
        )
        .route(
            "/api/v1/agents/{id}/retire",
            post(retire).route_layer(auth.require(Permission::AgentRetire)),
        )
        .with_state(core.clone());
    mesh_service::server::finish_router(core.context(), api, openapi())
}

async fn read_secret(
    State(core): State<Arc<AgentRegistry>>,
    _caller: Caller,
    axum::extract::Path((id, name)): axum::extract::Path<(String, String)>,
) -> Result<Json<crate::secrets::SecretValue>, ApiError> {
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("id: `{id}` is not a UUID")))?;
    Ok(Json(core.read_secret(id, &name).await?))
}

async fn register(
    State(core): State<Arc<AgentRegistry>>,
    caller: Caller,
    JsonBody(new): JsonBody<NewAgent>,
) -> Result<(StatusCode, Json<Agent>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(core.register(&caller.principal, new).await?),
    ))
}

async fn match_agents(
    State(core): State<Arc<AgentRegistry>>,
    _caller: Caller,
    JsonBody(query): JsonBody<MatchQuery>,
) -> Result<Json<MatchResult>, ApiError> {
    Ok(Json(core.match_agents(&query).await?))
}

async fn import(
    State(core): State<Arc<AgentRegistry>>,
    caller: Caller,
    JsonBody(body): JsonBody<ImportBody>,
) -> Result<(StatusCode, Json<Agent>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(core.import(&caller.principal, body).await?),
    ))
}

async fn drain(
    State(core): State<Arc<AgentRegistry>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(core.drain(&caller.principal, id).await?))
}

async fn list(
    State(core): State<Arc<AgentRegistry>>,
    _caller: Caller,
    QueryParams(query): QueryParams<AgentListQuery>,
) -> Result<Json<Page<Agent>>, ApiError> {
    Ok(Json(core.list(query).await?))
}

async fn summary(
    State(core): State<Arc<AgentRegistry>>,
    _caller: Caller,
) -> Result<Json<AgentSummary>, ApiError> {
    Ok(Json(core.summary().await?))
}

async fn get_agent(
    State(core): State<Arc<AgentRegistry>>,
    _caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(core.get(id).await?))
}

async fn heartbeat(
    State(core): State<Arc<AgentRegistry>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(core.heartbeat(&caller.principal, id).await?))
}

async fn retire(
    State(core): State<Arc<AgentRegistry>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(core.retire(&caller.principal, id).await?))
}

fn new_agent_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "version", "role", "riskTier", "capabilities"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "maxLength": 128},
            "version": {"type": "string", "maxLength": 32},
            "role": {"enum": mesh_types::AgentRole::NAMES},
            "riskTier": {"enum": mesh_types::RiskTier::NAMES},
            "capabilities": {"type": "array", "items": {"type": "string"}},
            "maxConcurrency": {"type": "integer", "minimum": 1, "description": "busy at this many leases"},
            "modelPreference": {
                "type": "object",
                "required": ["provider", "model"],
                "properties": {
                    "provider": {"type": "string"}, "model": {"type": "string"},
                    "temperature": {"type": "number"}, "maxTokens": {"type": "integer"},
                    "fallbackProvider": {"type": "string"}, "fallbackModel": {"type": "string"},
                },
            },
            "costProfile": {
                "type": "object",
                "required": ["inputCostPer1kTokens", "outputCostPer1kTokens", "maxBudgetPerTask"],
                "properties": {
                    "inputCostPer1kTokens": {"type": "number"}, "outputCostPer1kTokens": {"type": "number"},
                    "maxBudgetPerTask": {"type": "number"}, "currency": {"type": "string", "default": "USD"},
                },
            },
        },
    })
}

fn match_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "role": {"enum": mesh_types::AgentRole::NAMES},
            "capabilities": {"type": "array", "items": {"type": "string"}, "description": "all required"},
            "riskTier": {"enum": mesh_types::RiskTier::NAMES, "description": "the work's tier; the agent's must cover it"},
            "dataClassification": {"enum": mesh_types::DataClassification::NAMES},
            "limit": {"type": "integer", "minimum": 1, "maximum": mesh_types::matching::MAX_MATCH_LIMIT},
        },
    })
}

fn import_schema() -> Value {
    json!({
        "type": "object",
        "required": ["url"],
        "additionalProperties": false,
        "properties": {
            "url": {"type": "string", "description": "the agent's base URL or its Agent Card's URL"},
            "name": {"type": "string"},
            "role": {"enum": mesh_types::AgentRole::NAMES, "default": "custom"},
            "riskTier": {"enum": mesh_types::RiskTier::NAMES, "default": "low"},
            "capabilities": {"type": "array", "items": {"type": "string"}, "description": "default: the card's skill ids and tags"},
            "maxConcurrency": {"type": "integer", "minimum": 1},
            "token": {"type": "string", "pattern": "^secret://", "description": "secret://NAME: a bearer token for the agent's interface, read from the secret store; naming it takes secret.read"},
        },
    })
}

fn openapi() -> Value {
    let op = Op::guarded;
    document(
        ServiceName::AgentRegistry,
        &[
            op(
                "post",
                "/api/v1/agents",
                "Register an agent (409 if the name is taken)",
                Permission::AgentRegister,
                Some(new_agent_schema()),
                (201, "The registered agent"),
            ),
            op(
                "get",
                "/api/v1/agents",
                "List agents (filters: status, role, capability, a2a)",
                Permission::AgentRead,
                None,
                (200, "A page of agents"),
            ),
            op(
                "post",
                "/api/v1/agents/match",
                "Agents that can take work (role, capabilities, riskTier), best first, each with its score and why; and those excluded, with why",
                Permission::AgentRead,
                Some(match_schema()),
                (200, "{candidates, excluded}"),
            ),
            op(
                "post",
                "/api/v1/agents/import",
                "Import a remote A2A agent from its Agent Card (400 naming what is wrong with the card, 502 if it cannot be fetched)",
                Permission::AgentRegister,
                Some(import_schema()),
                (201, "The registered agent, with its a2a endpoint"),
            ),
            op(
                "post",
                "/api/v1/agents/{id}/drain",
                "Drain an agent: no new work; retired once it holds no lease",
                Permission::AgentRetire,
                None,
                (200, "The draining agent"),
            ),
            op(
                "get",
                "/api/v1/agents/summary",
                "How many agents are in each state",
                Permission::AgentRead,
                None,
                (200, "Counts by status"),
            ),
            op(
                "get",
                "/api/v1/agents/{id}",
                "Get an agent",
                Permission::AgentRead,
                None,
                (200, "The agent"),
            ),
            op(
                "post",
                "/api/v1/agents/{id}/heartbeat",
                "Record a heartbeat (an unhealthy agent recovers)",
                Permission::AgentHeartbeat,
                None,
                (200, "The agent"),
            ),
            op(
                "post",
                "/api/v1/agents/{id}/retire",
                "Retire an agent",
                Permission::AgentRetire,
                None,
                (200, "The retired agent"),
            ),
            op(
                "get",
                "/api/v1/agents/{id}/secrets/{name}",
                "Read a secret for the agent, if the secret.read policy puts it in the agent's scope",
                Permission::SecretRead,
                None,
                (200, "{name, value}"),
            ),
        ],
    )
}
