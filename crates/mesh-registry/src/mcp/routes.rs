//! HTTP for MCP on the tool registry's port: the registered servers
//! (`/api/v1/mcp/servers`) and the mesh's own MCP endpoint (`/mcp`).

use super::server::{McpReply, McpRequest};
use super::servers::{McpServerView, RegisteredServer};
use crate::tools::ToolRegistry;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_service::extract::MAX_BODY_BYTES;
use mesh_service::{ApiError, Caller, JsonBody};
use mesh_types::{NewMcpServer, Permission};
use serde_json::{Value, json};
use std::sync::Arc;

pub(crate) fn routes(core: Arc<ToolRegistry>) -> Router {
    let auth = core.context().auth.clone();
    Router::new()
        .route(
            "/api/v1/mcp/servers",
            post(register)
                .route_layer(auth.require(Permission::ToolRegister))
                .merge(get(list).route_layer(auth.require(Permission::ToolRead))),
        )
        .route(
            "/api/v1/mcp/servers/{name}/retire",
            post(retire).route_layer(auth.require(Permission::ToolRetire)),
        )
        .route(
            "/mcp",
            post(mcp).route_layer(auth.require(Permission::ToolInvoke)),
        )
        .with_state(core)
}

async fn register(
    State(core): State<Arc<ToolRegistry>>,
    caller: Caller,
    JsonBody(new): JsonBody<NewMcpServer>,
) -> Result<(StatusCode, Json<RegisteredServer>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(core.register_mcp_server(&caller.principal, new).await?),
    ))
}

async fn list(
    State(core): State<Arc<ToolRegistry>>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let items: Vec<McpServerView> = core.list_mcp_servers().await?;
    Ok(Json(json!({"items": items})))
}

async fn retire(
    State(core): State<Arc<ToolRegistry>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<McpServerView>, ApiError> {
    Ok(Json(
        core.retire_mcp_server(&caller.principal, &name).await?,
    ))
}

fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

/// The browser-facing guard the transport asks for: a request carrying an `Origin`
/// must come from the page the server itself serves (defeats DNS rebinding).
fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| reqwest::Url::parse(o).ok())
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

async fn mcp(
    State(core): State<Arc<ToolRegistry>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !origin_allowed(&headers) {
        return rpc_error(
            StatusCode::FORBIDDEN,
            -32600,
            "requests from another origin are refused",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            &format!("the message exceeds {MAX_BODY_BYTES} bytes"),
        );
    };
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not text)"))
    };
    let request = McpRequest {
        caller: &caller,
        version: text("mcp-protocol-version"),
        agent: text("x-mesh-agent-id"),
        task: text("x-mesh-task-id"),
        body: &bytes,
    };
    match core.serve_mcp(request).await {
        McpReply::Accepted => StatusCode::ACCEPTED.into_response(),
        McpReply::Message(message) => Json(message).into_response(),
        McpReply::BadRequest(message) => (StatusCode::BAD_REQUEST, Json(message)).into_response(),
    }
}
