//! `/mcp`: the tool registry as an MCP server (Streamable HTTP, one JSON-RPC message per
//! POST, answered with `application/json`; no sessions, so any tool-registry process
//! can answer any request).
//!
//! Both revisions are served: a 2025-11-25 client opens with `initialize`; a 2026-07-28
//! client may skip it and declare its version in each request's `_meta` (and ask
//! `server/discover`). The caller acts as an agent: the one named by `X-Mesh-Agent-Id`,
//! or else an agent of its own that the registry registers for its API key on first
//! use (role `custom`, risk tier `low`, through the agent registry and its policy), so
//! a client configured with only a bearer key works. `tools/list` shows the tools that
//! agent's `tool.call` policy would allow; `tools/call` is an invocation like any other.

use super::catalog::{declares_object, descriptor};
use super::{LATEST, LEGACY, META_VERSION, SUPPORTED};
use crate::invoke::InvokeBody;
use crate::tools::ToolRegistry;
use mesh_policy::{Point, Resource, inputs};
use mesh_service::{ApiError, Caller};
use mesh_types::agent::AgentFilter;
use mesh_types::tool::ToolFilter;
use mesh_types::{Agent, AgentStatus, NewAgent, PageRequest, ToolStatus};
use serde_json::{Value, json};
use uuid::Uuid;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28's error for a protocol version the server does not speak.
const UNSUPPORTED_VERSION: i64 = -32022;
/// Tools per `tools/list` page.
const PAGE: u32 = 100;

/// One POST to `/mcp`, as the route read it.
pub(crate) struct McpRequest<'a> {
    pub caller: &'a Caller,
    /// `MCP-Protocol-Version`.
    pub version: Option<&'a str>,
    /// `X-Mesh-Agent-Id`: the agent the caller acts as.
    pub agent: Option<&'a str>,
    /// `X-Mesh-Task-Id`: the task tool calls serve.
    pub task: Option<&'a str>,
    pub body: &'a [u8],
}

/// What to send back: the route maps these to 202, 200 and 400.
pub(crate) enum McpReply {
    Accepted,
    Message(Value),
    BadRequest(Value),
}

struct RpcError {
    code: i64,
    message: String,
    data: Option<Value>,
    /// Refused at the HTTP level (400) rather than answered (200).
    bad_request: bool,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
            bad_request: false,
        }
    }

    fn rejected(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            bad_request: true,
            ..RpcError::new(code, message)
        }
    }

    fn unsupported(requested: &str) -> Self {
        RpcError {
            data: Some(json!({"supported": SUPPORTED, "requested": requested})),
            ..RpcError::rejected(
                UNSUPPORTED_VERSION,
                format!(
                    "unsupported protocol version {requested}; this server speaks {}",
                    SUPPORTED.join(", ")
                ),
            )
        }
    }

    fn reply(self, id: Value) -> McpReply {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = self.data {
            error["data"] = data;
        }
        let message = json!({"jsonrpc": "2.0", "id": id, "error": error});
        if self.bad_request {
            McpReply::BadRequest(message)
        } else {
            McpReply::Message(message)
        }
    }
}

fn server_info() -> Value {
    json!({"name": "agentic-mesh", "title": "Agentic Mesh tool registry", "version": env!("CARGO_PKG_VERSION")})
}

const INSTRUCTIONS: &str = "The tools of an Agentic Mesh: every call is checked against the tool's \
    schemas, rate limit and the mesh's policies, and recorded in its provenance log.";

fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}})
}

/// A client asking a revision this server speaks gets it; any other `initialize` is
/// answered with 2025-11-25, the newest revision that has the handshake at all (a
/// client still opening with `initialize` cannot speak the stateless 2026-07-28).
fn initialize(params: &Value) -> Result<Value, RpcError> {
    let asked = params["protocolVersion"].as_str().ok_or_else(|| {
        RpcError::new(
            INVALID_PARAMS,
            "initialize: protocolVersion (a string) is required",
        )
    })?;
    let version = if SUPPORTED.contains(&asked) {
        asked
    } else {
        LEGACY
    };
    Ok(json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    }))
}

fn discover() -> Value {
    json!({
        "supportedVersions": SUPPORTED,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
        "_meta": {"io.modelcontextprotocol/serverInfo": server_info()},
        "ttlMs": 0,
        "cacheScope": "public",
    })
}

fn internal(e: ApiError) -> RpcError {
    RpcError::new(INTERNAL_ERROR, e.message)
}

impl ToolRegistry {
    pub(crate) async fn serve_mcp(&self, request: McpRequest<'_>) -> McpReply {
        if let Some(v) = request.version
            && !SUPPORTED.contains(&v)
        {
            return RpcError::unsupported(v).reply(Value::Null);
        }
        let message: Value = match serde_json::from_slice(request.body) {
            Ok(message) => message,
            Err(e) => {
                return RpcError::rejected(PARSE_ERROR, format!("not JSON: {e}"))
                    .reply(Value::Null);
            }
        };
        if message.is_array() {
            return RpcError::rejected(
                INVALID_REQUEST,
                "batches are not supported: one message per POST",
            )
            .reply(Value::Null);
        }
        let id = message.get("id").cloned();
        if message["jsonrpc"] != "2.0" {
            return RpcError::rejected(
                INVALID_REQUEST,
                "not JSON-RPC 2.0 (jsonrpc must be \"2.0\")",
            )
            .reply(id.unwrap_or(Value::Null));
        }
        let Some(method) = message["method"].as_str() else {
            // The client's answer to a request of ours (we send none) needs no reply.
            return if message.get("result").is_some() || message.get("error").is_some() {
                McpReply::Accepted
            } else {
                RpcError::rejected(INVALID_REQUEST, "a request needs a method")
                    .reply(id.unwrap_or(Value::Null))
            };
        };
        // Notifications (`notifications/initialized`, cancellations) are taken note of.
        let Some(id) = id else {
            return McpReply::Accepted;
        };
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return RpcError::rejected(INVALID_REQUEST, "id must be a string or an integer")
                .reply(Value::Null);
        }
        let params = message.get("params").cloned().unwrap_or_else(|| json!({}));
        if !params.is_object() {
            return RpcError::new(INVALID_PARAMS, "params must be an object").reply(id);
        }
        let declared = params["_meta"][META_VERSION].as_str();
        if let Some(v) = declared {
            if !SUPPORTED.contains(&v) {
                return RpcError::unsupported(v).reply(id);
            }
            if request.version.is_some_and(|h| h != v) {
                return RpcError::rejected(
                    INVALID_REQUEST,
                    format!("the MCP-Protocol-Version header does not match _meta's version {v}"),
                )
                .reply(id);
            }
        }
        let stateless = declared.or(request.version) == Some(LATEST);
        let outcome = match method {
            "initialize" => initialize(&params),
            "ping" => Ok(json!({})),
            "server/discover" => Ok(discover()),
            "tools/list" => self.mcp_list(&request, &params, stateless).await,
            "tools/call" => self.mcp_call(&request, &params).await,
            other => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("method not found: {other}"),
            )),
        };
        match outcome {
            Ok(mut result) => {
                if stateless {
                    result["resultType"] = json!("complete");
                }
                McpReply::Message(json!({"jsonrpc": "2.0", "id": id, "result": result}))
            }
            Err(e) => e.reply(id),
        }
    }

    /// The tools the calling agent's `tool.call` policy allows (judged without
    /// arguments and without logging: listing is not calling).
    async fn mcp_list(
        &self,
        request: &McpRequest<'_>,
        params: &Value,
        stateless: bool,
    ) -> Result<Value, RpcError> {
        let agent = self.mcp_agent(request).await?;
        let cursor = params["cursor"].as_str().map(str::to_string);
        let filter = ToolFilter {
            status: Some(ToolStatus::Active),
            ..ToolFilter::default()
        };
        let page = self
            .context()
            .store
            .tools
            .list_tools(&filter, &PageRequest::new(Some(PAGE), cursor))
            .await
            .map_err(|e| match e {
                mesh_store::StoreError::Invalid { .. } => {
                    RpcError::new(INVALID_PARAMS, "cursor: not a cursor this server issued")
                }
                other => internal(other.into()),
            })?;
        let service = self.context().name.as_str();
        let tools: Vec<Value> = page
            .items
            .iter()
            .filter(|tool| {
                let resource = Resource {
                    kind: Some("tool".into()),
                    id: Some(tool.id.to_string()),
                    classification: None,
                    attributes: json!({"name": tool.name, "riskTier": tool.risk_tier, "host": "", "body": {}}),
                };
                let ctx = inputs::context(inputs::agent(&agent), resource, service);
                self.policy().judge(Point::ToolCall, ctx).decision.permits()
            })
            .filter_map(descriptor)
            .collect();
        let mut result = json!({"tools": tools});
        if let Some(next) = page.next_cursor {
            result["nextCursor"] = json!(next);
        }
        if stateless {
            // What a caller may use depends on who it is.
            result["ttlMs"] = json!(0);
            result["cacheScope"] = json!("private");
        }
        Ok(result)
    }

    /// An invocation; a tool's failure (or refusal) is a result with `isError`, so the
    /// model using the client can read it, while an unknown tool is a protocol error.
    async fn mcp_call(&self, request: &McpRequest<'_>, params: &Value) -> Result<Value, RpcError> {
        let name = params["name"].as_str().ok_or_else(|| {
            RpcError::new(INVALID_PARAMS, "tools/call: name (a string) is required")
        })?;
        let tool = self
            .find_by_name(name)
            .await
            .map_err(internal)?
            .filter(|t| t.status != ToolStatus::Retired)
            .ok_or_else(|| RpcError::new(INVALID_PARAMS, format!("unknown tool: {name}")))?;
        let arguments = params
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let task_id = match request.task {
            Some(task) => Some(Uuid::parse_str(task).map_err(|_| {
                RpcError::rejected(
                    INVALID_REQUEST,
                    format!("X-Mesh-Task-Id: `{task}` is not a UUID"),
                )
            })?),
            None => None,
        };
        let agent = self.mcp_agent(request).await?;
        let structured = declares_object(&tool.output_schema);
        let body = InvokeBody {
            agent_id: agent.id,
            arguments,
            task_id,
            data_classification: None,
        };
        match self.invoke_tool(tool, body).await {
            Ok(reply) => {
                let text = serde_json::to_string(&reply.output).unwrap_or_default();
                let mut result = json!({
                    "content": [{"type": "text", "text": text}],
                    "isError": false,
                    "_meta": {"io.agentic-mesh/toolCallId": reply.tool_call_id,
                              "io.agentic-mesh/cost": reply.cost, "io.agentic-mesh/currency": reply.currency},
                });
                if structured || reply.output.is_object() {
                    result["structuredContent"] = reply.output;
                }
                Ok(result)
            }
            Err(e) if e.status == axum::http::StatusCode::INTERNAL_SERVER_ERROR => Err(internal(e)),
            Err(e) => Ok(json!({
                "content": [{"type": "text", "text": format!("{}: {}", e.code, e.message)}],
                "isError": true,
            })),
        }
    }

    /// The agent the caller acts as: `X-Mesh-Agent-Id`, or its API key's own agent.
    async fn mcp_agent(&self, request: &McpRequest<'_>) -> Result<Agent, RpcError> {
        let refused = |e: ApiError| {
            if e.status.is_client_error() {
                RpcError::rejected(INVALID_REQUEST, e.message)
            } else {
                internal(e)
            }
        };
        if let Some(named) = request.agent {
            let id = Uuid::parse_str(named).map_err(|_| {
                RpcError::rejected(
                    INVALID_REQUEST,
                    format!("X-Mesh-Agent-Id: `{named}` is not a UUID"),
                )
            })?;
            return self.calling_agent(id).await.map_err(|e| {
                refused(ApiError::invalid(
                    "X-Mesh-Agent-Id",
                    format!("X-Mesh-Agent-Id: {}", e.message),
                ))
            });
        }
        self.key_agent(request.caller).await.map_err(refused)
    }

    /// The agent registered for this API key's MCP use, registered now if there is none.
    /// It is found again by a capability naming the key.
    async fn key_agent(&self, caller: &Caller) -> Result<Agent, ApiError> {
        let key = caller.principal.key_id;
        let known = self
            .mcp_agents
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied());
        if let Some(id) = known
            && let Ok(agent) = self.calling_agent(id).await
        {
            return Ok(agent);
        }
        let tag = format!("mcp-key:{key}");
        let filter = AgentFilter {
            capability: Some(tag.clone()),
            ..AgentFilter::default()
        };
        let found = self
            .context()
            .store
            .agents
            .list_agents(&filter, &PageRequest::new(Some(10), None))
            .await?
            .items
            .into_iter()
            .find(|a| a.status != AgentStatus::Retired);
        let agent = match found {
            Some(agent) => agent,
            None => {
                let new: NewAgent = serde_json::from_value(json!({
                    "name": format!("mcp-client-{}", Uuid::now_v7().simple()),
                    "version": "1.0.0",
                    "role": "custom",
                    "riskTier": "low",
                    "capabilities": ["mcp-client", tag],
                }))
                .map_err(|e| ApiError::internal(format!("the MCP client's agent: {e}")))?;
                self.agents.register(caller, new).await?
            }
        };
        if let Ok(mut known) = self.mcp_agents.lock() {
            known.insert(key, agent.id);
        }
        Ok(agent)
    }
}
