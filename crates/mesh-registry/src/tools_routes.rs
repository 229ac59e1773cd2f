use crate::invoke::{InvokeBody, InvokeReply};
use crate::tools::{ToolListQuery, ToolRegistry};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_service::openapi::{Op, document};
use mesh_service::{ApiError, Caller, IdPath, JsonBody, QueryParams, ServiceName};
use mesh_types::{NewTool, Page, Permission, Tool};
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router(core: Arc<ToolRegistry>) -> Router {
    let auth = core.context().auth.clone();
    let api = Router::new()
        .route(
            "/api/v1/tools",
            post(register)
                .route_layer(auth.require(Permission::ToolRegister))
                .merge(get(list).route_layer(auth.require(Permission::ToolRead))),
        )
        .route(
            "/api/v1/tools/{id}",
            get(get_tool).route_layer(auth.require(Permission::ToolRead)),
        )
        .route(
            "/api/v1/tools/{tool}/invoke",
            post(invoke).route_layer(auth.require(Permission::ToolInvoke)),
        )
        .route(
            "/api/v1/tools/{id}/retire",
            post(retire).route_layer(auth.require(Permission::ToolRetire)),
        )
        .with_state(core.clone())
        .merge(crate::mcp::routes(core.clone()));
    mesh_service::server::finish_router(core.context(), api, openapi())
}

async fn register(
    State(core): State<Arc<ToolRegistry>>,
    caller: Caller,
    JsonBody(new): JsonBody<NewTool>,
) -> Result<(StatusCode, Json<Tool>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(core.register(&caller.principal, new).await?),
    ))
}

async fn list(
    State(core): State<Arc<ToolRegistry>>,
    _caller: Caller,
    QueryParams(query): QueryParams<ToolListQuery>,
) -> Result<Json<Page<Tool>>, ApiError> {
    Ok(Json(core.list(query).await?))
}

async fn get_tool(
    State(core): State<Arc<ToolRegistry>>,
    _caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Tool>, ApiError> {
    Ok(Json(core.get(id).await?))
}

async fn invoke(
    State(core): State<Arc<ToolRegistry>>,
    _caller: Caller,
    Path(tool): Path<String>,
    JsonBody(body): JsonBody<InvokeBody>,
) -> Result<Json<InvokeReply>, ApiError> {
    Ok(Json(core.invoke(&tool, body).await?))
}

async fn retire(
    State(core): State<Arc<ToolRegistry>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Tool>, ApiError> {
    Ok(Json(core.retire(&caller.principal, id).await?))
}

fn new_tool_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "version", "inputSchema", "outputSchema", "riskTier"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "maxLength": 128},
            "version": {"type": "string", "maxLength": 32},
            "description": {"type": "string"},
            "inputSchema": {"description": "A JSON Schema (2020-12 unless $schema says otherwise)"},
            "outputSchema": {"description": "A JSON Schema (2020-12 unless $schema says otherwise)"},
            "riskTier": {"enum": mesh_types::RiskTier::NAMES},
            "rateLimit": {"type": "integer", "minimum": 1, "description": "Invocations per minute"},
            "costModel": {
                "type": "object",
                "properties": {
                    "perInvocation": {"type": "number"}, "perInputUnit": {"type": "number"},
                    "inputUnitType": {"type": "string"}, "currency": {"type": "string", "default": "USD"},
                },
            },
        },
    })
}

fn openapi() -> Value {
    let op = Op::guarded;
    document(
        ServiceName::ToolRegistry,
        &[
            op(
                "post",
                "/api/v1/tools",
                "Register a tool (schemas must be valid JSON Schema)",
                Permission::ToolRegister,
                Some(new_tool_schema()),
                (201, "The registered tool"),
            ),
            op(
                "get",
                "/api/v1/tools",
                "List tools (filters: status, name)",
                Permission::ToolRead,
                None,
                (200, "A page of tools"),
            ),
            op(
                "get",
                "/api/v1/tools/{id}",
                "Get a tool",
                Permission::ToolRead,
                None,
                (200, "The tool"),
            ),
            op(
                "post",
                "/api/v1/tools/{id}/retire",
                "Retire a tool",
                Permission::ToolRetire,
                None,
                (200, "The retired tool"),
            ),
            op(
                "post",
                "/api/v1/tools/{tool}/invoke",
                "Invoke a tool (by id or name) for agent `agentId`: arguments checked against its inputSchema \
                 (400 naming the path), its rate limit (429), policy points tool.call and egress (403); \
                 its endpoint, built-in code or MCP server is called and the output checked against its \
                 outputSchema (502 tool_output_invalid naming the path); 502 tool_failed if the tool fails, \
                 503 mcp_unavailable if its MCP server is down; every call recorded as a ToolCall",
                Permission::ToolInvoke,
                Some(
                    json!({"type": "object", "required": ["agentId", "arguments"], "additionalProperties": false,
                    "properties": {"agentId": {"type": "string", "format": "uuid"}, "arguments": {},
                                   "taskId": {"type": "string", "format": "uuid"},
                                   "dataClassification": {"enum": mesh_types::DataClassification::NAMES}}}),
                ),
                (
                    200,
                    "{toolCallId, output, latencyMs, redacted, cost, currency}",
                ),
            ),
            op(
                "post",
                "/api/v1/mcp/servers",
                "Register an MCP server: `command` (argv, stdio) or `url` (Streamable HTTP); its tools \
                 become `<name>.<tool>`. 502 mcp_unreachable if it cannot be started or reached",
                Permission::ToolRegister,
                Some(new_mcp_server_schema()),
                (201, "{server, tools, skipped}"),
            ),
            op(
                "get",
                "/api/v1/mcp/servers",
                "List MCP servers, with this process's connection to each",
                Permission::ToolRead,
                None,
                (
                    200,
                    "{items: [{id, name, transport, command|url, connected, protocolVersion, lastError, …}]}",
                ),
            ),
            op(
                "post",
                "/api/v1/mcp/servers/{name}/retire",
                "Retire an MCP server and its tools; the connection is closed",
                Permission::ToolRetire,
                None,
                (200, "The retired server"),
            ),
            op(
                "post",
                "/mcp",
                "MCP (Streamable HTTP, revisions 2026-07-28 and 2025-11-25): one JSON-RPC message per POST \
                 (initialize, ping, server/discover, tools/list, tools/call); `X-Mesh-Agent-Id` names the \
                 calling agent, else the key's own agent is used. Notifications answer 202; GET is 405",
                Permission::ToolInvoke,
                Some(json!({"type": "object", "required": ["jsonrpc", "method"],
                            "properties": {"jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "integer"]},
                                           "method": {"type": "string"}, "params": {"type": "object"}}})),
                (200, "A JSON-RPC response (202 for a notification)"),
            ),
        ],
    )
}

fn new_mcp_server_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "url": {"type": "string", "format": "uri"},
            "riskTier": {"enum": mesh_types::RiskTier::NAMES, "default": "medium"},
            "rateLimit": {"type": "integer", "minimum": 1, "description": "Invocations per minute, per tool"},
            "costModel": {"type": "object", "description": "As a tool's costModel, for each of its tools"},
        },
    })
}
