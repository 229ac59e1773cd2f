//! Invocation (`POST /api/v1/tools/{idOrName}/invoke`, and `tools/call` over `/mcp`):
//! the registry calls a tool on an agent's behalf — its HTTP endpoint, a built-in tool
//! in this process, or an MCP server's tool — so every check of a tool call is here:
//! the input schema, the rate limit, `tool.call` (may this agent use this tool with these
//! arguments?), `egress` (may anything be sent to that host?), the output schema and the
//! cost model. Every call that went out leaves one `ToolCall` in provenance.

use crate::builtin::Builtin;
use crate::cost::{Cost, cost_of};
use crate::mcp::McpClient;
use crate::tools::ToolRegistry;
use axum::http::StatusCode;
use mesh_policy::{Actor, Point, Resource, inputs};
use mesh_service::ApiError;
use mesh_types::{
    Agent, AgentStatus, DataClassification, EventDraft, Tool, ToolBackend, ToolStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a tool may take to answer.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest tool reply accepted.
pub(crate) const MAX_TOOL_REPLY: usize = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeBody {
    /// The agent making the call; the policy judges it, provenance records it.
    pub agent_id: Uuid,
    pub arguments: Value,
    /// The task the call serves, so it appears on that task's timeline.
    #[serde(default)]
    pub task_id: Option<Uuid>,
    /// How sensitive the arguments are (default internal): decides whether they and
    /// the output are archived, and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_classification: Option<DataClassification>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeReply {
    pub tool_call_id: Uuid,
    pub output: Value,
    pub latency_ms: u64,
    /// Whether a policy redacted the arguments before they left.
    pub redacted: bool,
    /// What the call cost by the tool's cost model.
    pub cost: f64,
    pub currency: String,
}

/// Where a call goes; decided before the policy points, which judge its destination.
pub(crate) enum Target {
    Endpoint(reqwest::Url),
    Builtin(Builtin),
    Mcp {
        client: Arc<McpClient>,
        server: String,
        tool: String,
    },
}

impl Target {
    /// The URL the call sends data to, for the `egress` point: none for the file tools
    /// and for MCP servers the registry runs as local processes.
    fn destination(&self, arguments: &Value) -> Result<Option<reqwest::Url>, ApiError> {
        match self {
            Target::Endpoint(url) => Ok(Some(url.clone())),
            Target::Builtin(builtin) => builtin.destination(arguments),
            Target::Mcp { client, .. } => Ok(client.url()),
        }
    }
}

/// What came back from a tool: its output, and why the call failed if it did.
pub(crate) struct Called {
    pub output: Value,
    pub failure: Option<ApiError>,
    pub http_status: Option<u16>,
}

impl Called {
    pub fn ok(output: Value) -> Self {
        Called {
            output,
            failure: None,
            http_status: None,
        }
    }

    pub fn failed(failure: ApiError) -> Self {
        Called {
            output: Value::Null,
            failure: Some(failure),
            http_status: None,
        }
    }
}

/// 502: the tool was reached and failed.
pub(crate) fn tool_failed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "tool_failed", message)
}

impl ToolRegistry {
    /// Invokes the tool named by id or name.
    pub async fn invoke(&self, tool: &str, body: InvokeBody) -> Result<InvokeReply, ApiError> {
        let tool = self.resolve(tool).await?;
        self.invoke_tool(tool, body).await
    }

    pub(crate) async fn invoke_tool(
        &self,
        tool: Tool,
        body: InvokeBody,
    ) -> Result<InvokeReply, ApiError> {
        let mut span = crate::spans::open(self.context().name.as_str(), &tool, &body);
        let parent = span.context();
        let result =
            mesh_telemetry::within(parent, self.invoke_checked(tool, body, &mut span)).await;
        if let Err(err) = &result {
            span.fail(&err.code, &err.message);
        }
        result
    }

    async fn invoke_checked(
        &self,
        tool: Tool,
        body: InvokeBody,
        span: &mut mesh_telemetry::Span,
    ) -> Result<InvokeReply, ApiError> {
        if tool.status == ToolStatus::Retired {
            return Err(ApiError::conflict(format!("tool {} is retired", tool.name)));
        }
        check_arguments(&tool, &body.arguments)?;
        let target = self.target(&tool).await?;
        let destination = target.destination(&body.arguments)?;
        self.take_invocation(&tool).await?;
        let agent = self.calling_agent(body.agent_id).await?;
        let method = if matches!(target, Target::Builtin(_)) {
            "GET"
        } else {
            "POST"
        };
        let leaving = destination.as_ref().map(|url| (url, method));
        let (arguments, mut audit) = self
            .decide(&tool, &agent, leaving, &body.arguments, body.task_id)
            .await?;
        let redacted = arguments != body.arguments;
        let cost = cost_of(tool.cost_model.as_ref(), &arguments);

        let call_id = Uuid::now_v7();
        let started = Instant::now();
        let mut called = self.dispatch(target, &arguments).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        if called.failure.is_none()
            && let Err(invalid) = check_output(&tool, &called.output)
        {
            called.failure = Some(invalid);
        }
        if let Some(archive) = self.archive.get() {
            // The canonical JSON whose SHA-256 the event carries, arguments as they
            // left (redacted); restricted data is hash-only unless configured otherwise.
            let class = body.data_classification.unwrap_or_default().as_str();
            let canonical = |v: &Value| mesh_types::canonical::to_string(v).into_bytes();
            archive.submit(class, canonical(&arguments));
            archive.submit(class, canonical(&called.output));
        }
        let mut event = call_event(&tool, &agent, call_id, latency_ms, &arguments, &called);
        event.payload["redacted"] = json!(redacted);
        event.payload["cost"] = json!(cost.amount);
        event.payload["currency"] = json!(cost.currency);
        event.payload["costUnits"] = json!(cost.units);
        if let Some(task) = body.task_id {
            event = event.task(task);
        }
        // The decisions and the call itself, in one append.
        audit.push(event);
        self.context().store.provenance.append(audit).await?;
        crate::spans::recorded(span, call_id, &agent);
        if let Some(failure) = called.failure {
            return Err(failure);
        }
        let Cost {
            amount, currency, ..
        } = cost;
        Ok(InvokeReply {
            tool_call_id: call_id,
            output: called.output,
            latency_ms,
            redacted,
            cost: amount,
            currency,
        })
    }

    /// The policy points of a call: `tool.call`, then `egress` when it leaves this host.
    /// The arguments as the decisions left them (redacted), and the decisions' events to
    /// record with the call; a refusal is recorded here and returned as the 403.
    async fn decide(
        &self,
        tool: &Tool,
        agent: &Agent,
        leaving: Option<(&reqwest::Url, &str)>,
        arguments: &Value,
        task: Option<Uuid>,
    ) -> Result<(Value, Vec<EventDraft>), ApiError> {
        let host = leaving
            .and_then(|(url, _)| url.host_str())
            .unwrap_or_default()
            .to_string();
        let actor = Actor {
            name: agent.name.clone(),
            agent: Some((agent.id, agent.name.clone())),
            task,
        };
        let service = self.context().name.as_str();
        let call = Resource {
            kind: Some("tool".into()),
            id: Some(tool.id.to_string()),
            classification: None,
            attributes: json!({
                "name": tool.name, "riskTier": tool.risk_tier, "host": host, "body": arguments,
            }),
        };
        let allowed = self
            .policy()
            .admit(
                Point::ToolCall,
                inputs::context(inputs::agent(agent), call, service),
                &actor,
            )
            .await?;
        let mut arguments = allowed.input["resource"]["attributes"]["body"].clone();
        let mut audit = vec![allowed.audit];
        if let Some((url, method)) = leaving {
            let outbound = Resource {
                kind: Some("url".into()),
                id: None,
                classification: None,
                attributes: json!({"host": host, "url": url.as_str(), "method": method, "body": arguments}),
            };
            let passed = self
                .policy()
                .admit(
                    Point::Egress,
                    inputs::context(inputs::agent(agent), outbound, service),
                    &actor,
                )
                .await?;
            arguments = passed.input["resource"]["attributes"]["body"].clone();
            audit.push(passed.audit);
        }
        Ok((arguments, audit))
    }

    /// Where `tool`'s calls go, or why they cannot go anywhere now.
    async fn target(&self, tool: &Tool) -> Result<Target, ApiError> {
        match &tool.backend {
            ToolBackend::Http => {
                let endpoint = tool.endpoint.as_deref().ok_or_else(|| {
                    ApiError::conflict(format!("tool {} has no endpoint to invoke", tool.name))
                })?;
                let url = reqwest::Url::parse(endpoint)
                    .map_err(|e| ApiError::internal(format!("tool {} endpoint: {e}", tool.name)))?;
                Ok(Target::Endpoint(url))
            }
            ToolBackend::Builtin => {
                Builtin::named(&tool.name)
                    .map(Target::Builtin)
                    .ok_or_else(|| {
                        ApiError::internal(format!("no built-in tool is named {}", tool.name))
                    })
            }
            ToolBackend::Mcp {
                server,
                tool: remote,
            } => Ok(Target::Mcp {
                client: crate::mcp::client_for(self, server).await?,
                server: server.clone(),
                tool: remote.clone(),
            }),
        }
    }

    async fn dispatch(&self, target: Target, arguments: &Value) -> Called {
        match target {
            Target::Endpoint(url) => match self.post_json(url, arguments).await {
                Ok((status, output)) => Called {
                    failure: (!(200..300).contains(&status))
                        .then(|| tool_failed(format!("the tool answered HTTP {status}"))),
                    output,
                    http_status: Some(status),
                },
                Err(e) => Called::failed(e),
            },
            Target::Builtin(builtin) => match builtin.run(self, arguments).await {
                Ok(output) => Called::ok(output),
                Err(e) => Called::failed(e),
            },
            Target::Mcp {
                client,
                server,
                tool,
            } => crate::mcp::call(&client, &server, &tool, arguments).await,
        }
    }

    pub(crate) async fn calling_agent(&self, id: Uuid) -> Result<Agent, ApiError> {
        let agent = self
            .context()
            .store
            .agents
            .get_agent(id)
            .await?
            .ok_or_else(|| ApiError::invalid("agentId", format!("agentId: no agent {id}")))?;
        if matches!(agent.status, AgentStatus::Retired) {
            return Err(ApiError::conflict(format!(
                "agent {} is retired",
                agent.name
            )));
        }
        Ok(agent)
    }

    /// POSTs `arguments` and reads a JSON reply (a non-JSON reply is kept as a string).
    async fn post_json(
        &self,
        url: reqwest::Url,
        arguments: &Value,
    ) -> Result<(u16, Value), ApiError> {
        let unreachable = |e: reqwest::Error| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "tool_unreachable",
                format!(
                    "tool endpoint {}: {e}",
                    e.url().map(|u| u.as_str()).unwrap_or("?")
                ),
            )
        };
        let resp = self
            .http()
            .post(url)
            .json(arguments)
            .timeout(TOOL_TIMEOUT)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if bytes.len() > MAX_TOOL_REPLY {
            return Err(tool_failed(format!(
                "tool reply larger than {MAX_TOOL_REPLY} bytes"
            )));
        }
        let output = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, output))
    }
}

/// The `tool_call` event: who called what, how it went. The provenance graph draws it
/// as a `ToolCall` node `CALLED` by the agent.
fn call_event(
    tool: &Tool,
    agent: &Agent,
    call_id: Uuid,
    latency_ms: u64,
    arguments: &Value,
    called: &Called,
) -> EventDraft {
    let (backend, server) = match &tool.backend {
        ToolBackend::Http => ("http", None),
        ToolBackend::Builtin => ("builtin", None),
        ToolBackend::Mcp { server, .. } => ("mcp", Some(server)),
    };
    EventDraft::new("tool_call", &agent.name, "tool", Some(tool.id.to_string())).payload(json!({
        "toolCallId": call_id, "toolId": tool.id, "toolName": tool.name,
        "agentId": agent.id, "agentName": agent.name, "success": called.failure.is_none(),
        "latencyMs": latency_ms, "httpStatus": called.http_status,
        "backend": backend, "mcpServer": server,
        "argumentsSha256": mesh_types::canonical::sha256_hex(arguments),
        "outputSha256": mesh_types::canonical::sha256_hex(&called.output),
        "error": called.failure.as_ref().map(|e| e.message.clone()),
    }))
}

/// Arguments must satisfy the tool's input schema (checked at registration to compile).
fn check_arguments(tool: &Tool, arguments: &Value) -> Result<(), ApiError> {
    let validator = jsonschema::validator_for(&tool.input_schema)
        .map_err(|e| ApiError::internal(format!("tool {} input schema: {e}", tool.name)))?;
    if let Some(err) = validator.iter_errors(arguments).next() {
        let at = err.instance_path().to_string();
        return Err(ApiError::invalid(
            "arguments",
            format!("arguments{at}: {err} (tool {} input schema)", tool.name),
        ));
    }
    Ok(())
}

/// What a tool answers must satisfy its output schema; a reply that does not is the
/// tool's failure (502), named by the first failing path.
fn check_output(tool: &Tool, output: &Value) -> Result<(), ApiError> {
    let validator = jsonschema::validator_for(&tool.output_schema)
        .map_err(|e| ApiError::internal(format!("tool {} output schema: {e}", tool.name)))?;
    if let Some(err) = validator.iter_errors(output).next() {
        let at = err.instance_path().to_string();
        let at = if at.is_empty() { "/".to_string() } else { at };
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "tool_output_invalid",
            format!(
                "tool {} answered output that fails its outputSchema at {at}: {err}",
                tool.name
            ),
        ));
    }
    Ok(())
}
