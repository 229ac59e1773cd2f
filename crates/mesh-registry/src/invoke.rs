//! Invocation proxying (`POST /api/v1/tools/{id}/invoke`): the registry calls a tool's
//! HTTP endpoint on an agent's behalf, so both choke points of a tool call are here —
//! `tool.call` (may this agent use this tool with these arguments?) and `egress` (may
//! anything be sent to that host?) — and every call leaves a `ToolCall` in provenance.

use crate::tools::ToolRegistry;
use mesh_policy::{Actor, Point, Resource, inputs};
use mesh_service::ApiError;
use mesh_types::{Agent, AgentStatus, EventDraft, Tool, ToolStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a tool may take to answer.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest tool reply accepted.
const MAX_TOOL_REPLY: usize = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeBody {
    /// The agent making the call; the policy judges it, provenance records it.
    pub agent_id: Uuid,
    pub arguments: Value,
    /// The task the call serves, so it appears on that task's timeline.
    #[serde(default)]
    pub task_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeReply {
    pub tool_call_id: Uuid,
    pub output: Value,
    pub latency_ms: u64,
    /// Whether a policy redacted the arguments before they left.
    pub redacted: bool,
}

impl ToolRegistry {
    pub async fn invoke(&self, tool_id: Uuid, body: InvokeBody) -> Result<InvokeReply, ApiError> {
        let tool = self.get(tool_id).await?;
        if tool.status == ToolStatus::Retired {
            return Err(ApiError::conflict(format!("tool {} is retired", tool.name)));
        }
        let endpoint = tool.endpoint.clone().ok_or_else(|| {
            ApiError::conflict(format!("tool {} has no endpoint to invoke", tool.name))
        })?;
        check_arguments(&tool, &body.arguments)?;
        self.take_invocation(&tool)?;
        let agent = self.calling_agent(body.agent_id).await?;
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|e| ApiError::internal(format!("tool {} endpoint: {e}", tool.name)))?;
        let host = url.host_str().unwrap_or_default().to_string();
        let actor = Actor {
            name: agent.name.clone(),
            agent: Some((agent.id, agent.name.clone())),
            task: body.task_id,
        };
        let service = self.context().name.as_str();

        let call = Resource {
            kind: Some("tool".into()),
            id: Some(tool.id.to_string()),
            classification: None,
            attributes: json!({
                "name": tool.name, "riskTier": tool.risk_tier, "host": host, "body": body.arguments,
            }),
        };
        let allowed = self
            .policy()
            .admit(
                Point::ToolCall,
                inputs::context(inputs::agent(&agent), call, service),
                &actor,
            )
            .await?;
        let arguments = allowed.input["resource"]["attributes"]["body"].clone();
        let outbound = Resource {
            kind: Some("url".into()),
            id: None,
            classification: None,
            attributes: json!({"host": host, "url": endpoint, "method": "POST", "body": arguments}),
        };
        let leaving = self
            .policy()
            .admit(
                Point::Egress,
                inputs::context(inputs::agent(&agent), outbound, service),
                &actor,
            )
            .await?;
        let arguments = leaving.input["resource"]["attributes"]["body"].clone();
        let redacted = arguments != body.arguments;

        let call_id = Uuid::now_v7();
        let started = Instant::now();
        let outcome = self.post_json(url, &arguments).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let (success, status, output) = match &outcome {
            Ok((status, output)) => ((200..300).contains(status), Some(*status), output.clone()),
            Err(_) => (false, None, Value::Null),
        };
        let mut event =
            EventDraft::new("tool_call", &agent.name, "tool", Some(tool.id.to_string())).payload(
                json!({
                    "toolCallId": call_id, "toolId": tool.id, "toolName": tool.name,
                    "agentId": agent.id, "agentName": agent.name, "success": success,
                    "latencyMs": latency_ms, "httpStatus": status,
                    "argumentsSha256": mesh_types::canonical::sha256_hex(&arguments),
                    "outputSha256": mesh_types::canonical::sha256_hex(&output),
                    "redacted": redacted,
                    "error": outcome.as_ref().err().map(|e| e.message.clone()),
                }),
            );
        if let Some(task) = body.task_id {
            event = event.task(task);
        }
        // The two decisions and the call itself, in one append.
        self.context()
            .store
            .provenance
            .append(vec![allowed.audit, leaving.audit, event])
            .await?;
        let (status, output) = outcome?;
        if !(200..300).contains(&status) {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "tool_failed",
                format!("tool {} answered HTTP {status}", tool.name),
            ));
        }
        Ok(InvokeReply {
            tool_call_id: call_id,
            output,
            latency_ms,
            redacted,
        })
    }

    async fn calling_agent(&self, id: Uuid) -> Result<Agent, ApiError> {
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
                axum::http::StatusCode::BAD_GATEWAY,
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
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "tool_failed",
                format!("tool reply larger than {MAX_TOOL_REPLY} bytes"),
            ));
        }
        let output = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, output))
    }
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
