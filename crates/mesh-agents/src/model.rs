//! How a built-in agent reaches a model: the gateway core in this process, or the
//! routing gateway's OpenAI-compatible API over HTTP.

use mesh_gateway::{CallContext, ChatRequest, Gateway, Message};
use mesh_sdk::AgentError;
use mesh_types::Principal;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A model call may take this long before the attempt fails (and is retried).
const MODEL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub enum ModelClient {
    InProcess {
        gateway: Arc<Gateway>,
        principal: Principal,
    },
    Http {
        http: reqwest::Client,
        /// The gateway's base URL, e.g. `http://127.0.0.1:5001`.
        base_url: String,
        api_key: String,
    },
}

impl ModelClient {
    pub fn http(base_url: &str, api_key: &str) -> Self {
        ModelClient::Http {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
        }
    }

    /// One chat turn as `agent` working on `task`; the reply's text. With a
    /// `response_format` (a JSON Schema, see `parse`), servers that support schemas
    /// (llama.cpp, vLLM, OpenAI) constrain the reply to it with a grammar — what lets
    /// small models answer the planner's and critic's questions in a readable shape.
    pub async fn ask(
        &self,
        agent: Uuid,
        task: Uuid,
        model: &str,
        prompt: String,
        response_format: Option<Value>,
    ) -> Result<String, AgentError> {
        let messages = vec![Message {
            role: "user".into(),
            content: Value::String(prompt),
            extra: Default::default(),
        }];
        let mut extra = serde_json::Map::new();
        if let Some(format) = response_format {
            extra.insert("response_format".into(), format);
        }
        let request = ChatRequest {
            model: model.to_string(),
            messages,
            max_tokens: None,
            stream: None,
            extra,
        };
        let reply = match self {
            ModelClient::InProcess { gateway, principal } => {
                let call = CallContext {
                    agent_id: Some(agent),
                    task_id: Some(task),
                    ..CallContext::default()
                };
                gateway
                    .chat(principal, call, request)
                    .await
                    .map_err(|e| model_error(e.status.as_u16(), &e.message))?
            }
            ModelClient::Http {
                http,
                base_url,
                api_key,
            } => {
                let mut builder = http
                    .post(format!("{base_url}/v1/chat/completions"))
                    .bearer_auth(api_key);
                // The gateway's `chat` span joins this agent's `invoke_agent` trace.
                if let Some(parent) = mesh_telemetry::traceparent() {
                    builder = builder.header(mesh_telemetry::TRACEPARENT, parent);
                }
                let resp = builder
                    .header("x-mesh-agent-id", agent.to_string())
                    .header("x-mesh-task-id", task.to_string())
                    .json(&json!(request))
                    .timeout(MODEL_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| AgentError::retryable(format!("routing gateway: {e}")))?;
                let status = resp.status().as_u16();
                let body: Value = resp
                    .json()
                    .await
                    .map_err(|e| AgentError::retryable(format!("routing gateway reply: {e}")))?;
                if !(200..300).contains(&status) {
                    let message = body["error"]["message"].as_str().unwrap_or("no message");
                    return Err(model_error(status, message));
                }
                body
            }
        };
        reply["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AgentError::retryable("the model's reply had no text content"))
    }
}

/// Refusals (policy, budget, bad request) will not change on retry; the rest may.
fn model_error(status: u16, message: &str) -> AgentError {
    let text = format!("model call failed (HTTP {status}): {message}");
    match status {
        400 | 401 | 402 | 403 | 404 | 422 => AgentError::fatal(text),
        _ => AgentError::retryable(text),
    }
}
