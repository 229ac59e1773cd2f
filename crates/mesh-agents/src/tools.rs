//! How a built-in agent uses the tool registry: the core in this process, or its HTTP
//! API. Every call goes through the registry's checks (schema, `tool.call`, `egress`,
//! rate limit) and is recorded as the agent's `ToolCall`.

use mesh_registry::{InvokeBody, ToolRegistry};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub enum ToolClient {
    InProcess(Arc<ToolRegistry>),
    Http {
        http: reqwest::Client,
        /// The tool registry's base URL, e.g. `http://127.0.0.1:5005`.
        base_url: String,
        api_key: String,
    },
}

impl ToolClient {
    pub fn http(base_url: &str, api_key: &str) -> Self {
        ToolClient::Http {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
        }
    }

    /// Invokes `tool` as `agent` for `task`; the tool's output, or why there is none.
    pub async fn invoke(
        &self,
        tool: &str,
        agent: Uuid,
        task: Uuid,
        arguments: Value,
    ) -> Result<Value, String> {
        match self {
            ToolClient::InProcess(registry) => {
                let body = InvokeBody {
                    agent_id: agent,
                    arguments,
                    task_id: Some(task),
                    data_classification: None,
                };
                registry
                    .invoke(tool, body)
                    .await
                    .map(|reply| reply.output)
                    .map_err(|e| e.message)
            }
            ToolClient::Http {
                http,
                base_url,
                api_key,
            } => {
                let mut builder = http
                    .post(format!("{base_url}/api/v1/tools/{tool}/invoke"))
                    .bearer_auth(api_key);
                // The registry's `execute_tool` span joins this agent's trace.
                if let Some(parent) = mesh_telemetry::traceparent() {
                    builder = builder.header(mesh_telemetry::TRACEPARENT, parent);
                }
                let resp = builder
                    .json(&json!({"agentId": agent, "taskId": task, "arguments": arguments}))
                    .timeout(TOOL_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| format!("tool registry: {e}"))?;
                let ok = resp.status().is_success();
                let body: Value = resp
                    .json()
                    .await
                    .map_err(|e| format!("tool registry reply: {e}"))?;
                if ok {
                    Ok(body["output"].clone())
                } else {
                    Err(body["error"]["message"]
                        .as_str()
                        .unwrap_or("the tool call failed")
                        .to_string())
                }
            }
        }
    }
}
