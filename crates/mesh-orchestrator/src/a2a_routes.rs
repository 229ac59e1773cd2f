//! A2A over HTTP on the orchestrator's port: each agent's Agent Card (public, as A2A
//! discovery is) and its JSON-RPC endpoint. The endpoint is one route carrying several
//! methods, so it authenticates inside the handler: `Authenticator::check` for
//! task.read first, then for what the method the body names needs (refusals are
//! recorded like any other).

use crate::a2a::{A2aFailure, permission_for};
use crate::a2a_stream;
use crate::core::Orchestrator;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_a2a::jsonrpc::{self, RpcError};
use mesh_service::openapi::{Op, document};
use mesh_service::{ApiError, IdPath, ServiceName};
use mesh_types::Permission;
use serde_json::{Value, json};
use std::sync::Arc;

const CARD_PATH: &str = "/a2a/agents/{id}/.well-known/agent-card.json";
const RPC_PATH: &str = "/a2a/agents/{id}";

pub fn router(core: Arc<Orchestrator>) -> Router {
    Router::new()
        .route(CARD_PATH, get(card))
        .route(RPC_PATH, post(rpc))
        .with_state(core)
}

/// Where the caller reached this service, so the card points back at it.
fn base_url(headers: &HeaderMap) -> String {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let scheme = text("x-forwarded-proto").unwrap_or("http");
    let host = text(header::HOST.as_str()).unwrap_or("127.0.0.1:5000");
    format!("{scheme}://{host}")
}

async fn card(
    State(core): State<Arc<Orchestrator>>,
    IdPath(id): IdPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let agent = core.a2a_agent(id).await?;
    let url = format!("{}/a2a/agents/{id}", base_url(&headers));
    let card = mesh_a2a::mesh::card_for(&agent, &url);
    // Cards change when agents do, rarely; a minute of caching spares the registry.
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(card)).into_response())
}

fn rpc_reply(id: Value, outcome: Result<Value, RpcError>) -> Response {
    let reply = match outcome {
        Ok(result) => jsonrpc::Response::result(id, result),
        Err(err) => jsonrpc::Response::error(id, err),
    };
    Json(reply).into_response()
}

/// `1.0`, or the same major and minor written with a patch (`1.0.2`).
fn version_supported(asked: &str) -> bool {
    let asked = asked.trim();
    let ours = mesh_a2a::PROTOCOL_VERSION;
    asked == ours
        || asked
            .strip_prefix(ours)
            .is_some_and(|rest| rest.starts_with('.'))
}

async fn rpc(
    State(core): State<Arc<Orchestrator>>,
    IdPath(id): IdPath,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let path = format!("/a2a/agents/{id}");
    let auth = &core.context().auth;
    // Every method needs at least task.read, so a request without a usable key is
    // refused before its body is read; the method then decides what more it needs.
    let reader = auth
        .check("POST", &path, &headers, Permission::TaskRead)
        .await?;
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return Ok(rpc_reply(Value::Null, Err(RpcError::parse_error(e)))),
    };
    let call_id = value.get("id").cloned().unwrap_or(Value::Null);
    // A client naming another version gets the error the binding defines rather than
    // answers in a shape it does not expect. No header is taken as this version: a
    // missing header says nothing about the client.
    if let Some(asked) = headers.get("a2a-version").and_then(|v| v.to_str().ok())
        && !version_supported(asked)
    {
        let err = RpcError::version_not_supported(asked.trim(), mesh_a2a::PROTOCOL_VERSION);
        return Ok(rpc_reply(call_id, Err(err)));
    }
    let request = match serde_json::from_value::<jsonrpc::Request>(value) {
        Ok(r) if r.jsonrpc == "2.0" => r,
        Ok(_) => {
            let err = RpcError::invalid_request("jsonrpc must be \"2.0\"");
            return Ok(rpc_reply(call_id, Err(err)));
        }
        Err(e) => return Ok(rpc_reply(call_id, Err(RpcError::invalid_request(e)))),
    };
    let caller = match permission_for(&request.method) {
        Permission::TaskRead => reader,
        needed => auth.check("POST", &path, &headers, needed).await?,
    };
    let agent = core.a2a_agent(id).await?;
    if matches!(
        request.method.as_str(),
        jsonrpc::SEND_STREAMING_MESSAGE | jsonrpc::SUBSCRIBE_TO_TASK
    ) {
        // A refusal comes before the stream, as a plain JSON-RPC reply.
        return match core
            .a2a_stream_start(&caller, &agent, &request.method, request.params)
            .await
        {
            Ok(task) => {
                let events = a2a_stream::follow(core.clone(), caller, &task);
                Ok(a2a_stream::sse(events, request.id).into_response())
            }
            Err(A2aFailure::Rpc(err)) => Ok(rpc_reply(request.id, Err(err))),
            Err(A2aFailure::Http(err)) => Err(err),
        };
    }
    match core
        .a2a_call(&caller, &agent, &request.method, request.params)
        .await
    {
        Ok(result) => Ok(rpc_reply(request.id, Ok(result))),
        Err(A2aFailure::Rpc(err)) => Ok(rpc_reply(request.id, Err(err))),
        Err(A2aFailure::Http(err)) => Err(err),
    }
}

/// The orchestrator's OpenAPI document with the A2A routes added.
pub fn with_openapi(mut doc: Value) -> Value {
    let ours = document(
        ServiceName::Orchestrator,
        &[
            Op {
                method: "get",
                path: CARD_PATH,
                summary: "An agent's A2A Agent Card (public): one skill per capability, its JSON-RPC endpoint",
                permission: None,
                request: None,
                success: (200, "The Agent Card"),
            },
            Op::guarded(
                "post",
                RPC_PATH,
                "A2A JSON-RPC: SendMessage (task.submit) creates a mesh task of metadata.taskType or the agent's first capability; SendStreamingMessage (task.submit) and SubscribeToTask (task.read) answer with a Server-Sent Events stream of StreamResponses until the task ends; GetTask (task.read); CancelTask (task.cancel)",
                Permission::TaskRead,
                Some(json!({
                    "type": "object",
                    "required": ["jsonrpc", "method"],
                    "properties": {
                        "jsonrpc": {"const": "2.0"},
                        "id": {"type": ["string", "integer"]},
                        "method": {"enum": [
                            jsonrpc::SEND_MESSAGE, jsonrpc::SEND_STREAMING_MESSAGE,
                            jsonrpc::SUBSCRIBE_TO_TASK, jsonrpc::GET_TASK, jsonrpc::CANCEL_TASK,
                        ]},
                        "params": {"type": "object"},
                    },
                })),
                (
                    200,
                    "A JSON-RPC response: {result} (a Task, or {task} for SendMessage) or {error}; for the streaming methods, text/event-stream of responses whose result is a StreamResponse",
                ),
            ),
        ],
    );
    if let (Some(paths), Some(more)) = (doc["paths"].as_object_mut(), ours["paths"].as_object()) {
        for (path, item) in more {
            paths.entry(path.clone()).or_insert_with(|| item.clone());
        }
    }
    doc
}
