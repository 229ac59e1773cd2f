//! Every mesh agent is also an A2A agent: its Agent Card, and its JSON-RPC methods
//! mapped onto mesh tasks. `SendMessage` submits a task (as `POST /api/v1/tasks`
//! would, flows and policy included) of the type named in the message's metadata
//! (`taskType`) or else the agent's first capability, with the message's parts as
//! input; `GetTask` and `CancelTask` read and cancel it. `SendStreamingMessage` and
//! `SubscribeToTask` follow a task as a stream (`a2a_stream.rs`). A task is visible
//! through the endpoint of the agent it was sent to, and nowhere else in A2A.
//!
//! Work is queued for the capability, not pinned to the agent: any agent that
//! declares it may take the task, as with every mesh task.

use crate::core::Orchestrator;
use axum::http::StatusCode;
use mesh_a2a::jsonrpc::{self, RpcError};
use mesh_a2a::mesh::{METADATA_KEY, parts_to_value, task_from_mesh};
use mesh_a2a::{
    CancelTaskRequest, GetTaskRequest, SendMessageRequest, SendMessageResponse,
    SubscribeToTaskRequest,
};
use mesh_service::{ApiError, Caller};
use mesh_types::{Agent, AgentStatus, NewTask, Permission, Task};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// How long `SendMessage` waits for the task to end when the client did not ask for
/// an immediate reply; after that it answers with the task as it stands, to be
/// followed with `GetTask`.
const SEND_WAIT: Duration = Duration::from_secs(20);
const SEND_POLL: Duration = Duration::from_millis(100);

/// The permission a JSON-RPC method needs; methods the mesh does not serve need only
/// to read, so an unknown method is refused for what it is, not for the key.
pub fn permission_for(method: &str) -> Permission {
    match method {
        jsonrpc::SEND_MESSAGE | jsonrpc::SEND_STREAMING_MESSAGE => Permission::TaskSubmit,
        jsonrpc::CANCEL_TASK => Permission::TaskCancel,
        _ => Permission::TaskRead,
    }
}

/// Why an A2A call failed: a JSON-RPC error, or a refusal of the caller that is
/// answered with its HTTP status as every mesh route answers it.
pub enum A2aFailure {
    Rpc(RpcError),
    Http(ApiError),
}

impl From<RpcError> for A2aFailure {
    fn from(err: RpcError) -> Self {
        A2aFailure::Rpc(err)
    }
}

/// A mesh error as A2A sees it. Authentication and authorisation refusals (policy
/// included) keep their HTTP status.
fn from_api(err: ApiError, task_id: &str) -> A2aFailure {
    match err.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => A2aFailure::Http(err),
        StatusCode::BAD_REQUEST => RpcError::invalid_params(err.message).into(),
        StatusCode::NOT_FOUND => RpcError::task_not_found(task_id).into(),
        StatusCode::CONFLICT => RpcError::task_not_cancelable(task_id, err.message).into(),
        _ => RpcError::internal(err.message).into(),
    }
}

fn params<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        RpcError::invalid_params(format!("{path}: {}", e.into_inner()))
    })
}

impl Orchestrator {
    /// The agent behind an A2A endpoint: registered and not retired.
    pub async fn a2a_agent(&self, id: Uuid) -> Result<Agent, ApiError> {
        match self.context().store.agents.get_agent(id).await? {
            Some(agent) if agent.status != AgentStatus::Retired => Ok(agent),
            _ => Err(ApiError::not_found(format!("agent {id} not found"))),
        }
    }

    /// Runs one JSON-RPC call on `agent`'s endpoint; the result is the JSON to answer.
    pub async fn a2a_call(
        &self,
        caller: &Caller,
        agent: &Agent,
        method: &str,
        raw: Value,
    ) -> Result<Value, A2aFailure> {
        let reply = match method {
            jsonrpc::SEND_MESSAGE => {
                let task = self.a2a_send(caller, agent, params(raw)?).await?;
                json!(SendMessageResponse::Task(task_from_mesh(&task)))
            }
            jsonrpc::GET_TASK => {
                let req: GetTaskRequest = params(raw)?;
                json!(task_from_mesh(
                    &self.a2a_task(caller, agent, &req.id).await?
                ))
            }
            jsonrpc::CANCEL_TASK => {
                let req: CancelTaskRequest = params(raw)?;
                let task = self.a2a_task(caller, agent, &req.id).await?;
                if task.status.is_terminal() {
                    return Err(RpcError::task_not_cancelable(&req.id, task.status).into());
                }
                let cancelled = self
                    .cancel(caller, task.id)
                    .await
                    .map_err(|e| from_api(e, &req.id))?;
                json!(task_from_mesh(&cancelled))
            }
            other if jsonrpc::KNOWN_UNSERVED.contains(&other) => {
                return Err(RpcError::unsupported_operation(format!(
                    "{other} is not served by this agent (see its Agent Card's capabilities)"
                ))
                .into());
            }
            other => return Err(RpcError::method_not_found(other).into()),
        };
        Ok(reply)
    }

    async fn a2a_send(
        &self,
        caller: &Caller,
        agent: &Agent,
        req: SendMessageRequest,
    ) -> Result<Task, A2aFailure> {
        let immediately = req
            .configuration
            .as_ref()
            .is_some_and(|c| c.return_immediately);
        let mut task = self.a2a_submit(caller, agent, req).await?;
        let deadline = tokio::time::Instant::now() + SEND_WAIT;
        loop {
            let state = mesh_a2a::mesh::state_of(task.status);
            if immediately
                || state.is_terminal()
                || task.status == mesh_types::TaskStatus::NeedsApproval
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(task);
            }
            tokio::time::sleep(SEND_POLL).await;
            let id = task.id;
            task = self
                .get(caller, id)
                .await
                .map_err(|e| from_api(e, &id.to_string()))?;
        }
    }

    /// Where a streaming call starts: the task a `SendStreamingMessage` submits, or
    /// the one a `SubscribeToTask` names (refused once it has ended: `GetTask` reads
    /// it then).
    pub async fn a2a_stream_start(
        &self,
        caller: &Caller,
        agent: &Agent,
        method: &str,
        raw: Value,
    ) -> Result<Task, A2aFailure> {
        if method == jsonrpc::SEND_STREAMING_MESSAGE {
            return self.a2a_submit(caller, agent, params(raw)?).await;
        }
        let req: SubscribeToTaskRequest = params(raw)?;
        let task = self.a2a_task(caller, agent, &req.id).await?;
        if mesh_a2a::mesh::state_of(task.status).is_terminal() {
            return Err(RpcError::unsupported_operation(format!(
                "task {} has ended ({}); GetTask reads it",
                req.id, task.status
            ))
            .into());
        }
        Ok(task)
    }

    /// Checks a message and submits the task it asks for; the task as submitted.
    async fn a2a_submit(
        &self,
        caller: &Caller,
        agent: &Agent,
        req: SendMessageRequest,
    ) -> Result<Task, A2aFailure> {
        let message = req.message;
        if message.parts.is_empty() {
            return Err(RpcError::invalid_params("message.parts: at least one part").into());
        }
        if let Some(i) = message.parts.iter().position(|p| p.contents() != 1) {
            return Err(RpcError::invalid_params(format!(
                "message.parts[{i}]: exactly one of text, raw, url or data"
            ))
            .into());
        }
        if message.task_id.is_some() {
            return Err(RpcError::unsupported_operation(
                "continuing a task with another message (multi-turn) is not supported",
            )
            .into());
        }
        let named = |m: &Option<Value>| {
            m.as_ref()
                .and_then(|m| m.get("taskType"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let task_type = named(&message.metadata)
            .or_else(|| named(&req.metadata))
            .or_else(|| agent.capabilities.first().cloned())
            .ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "agent {} declares no capability; name the task type in metadata.taskType",
                    agent.name
                ))
            })?;
        if !agent.capabilities.contains(&task_type) {
            return Err(RpcError::invalid_params(format!(
                "metadata.taskType: agent {} does not take `{task_type}` (it takes {})",
                agent.name,
                agent.capabilities.join(", ")
            ))
            .into());
        }
        let context_id = message
            .context_id
            .clone()
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        // The message id makes a resend return the first task, as A2A allows.
        let key = format!("a2a:{}:{}", agent.id, message.message_id);
        let new = NewTask {
            task_type,
            input: parts_to_value(&message.parts),
            priority: 0,
            metadata: Some(json!({METADATA_KEY: {
                "agentId": agent.id, "contextId": context_id, "messageId": message.message_id,
            }})),
            risk_tier: None,
            data_classification: None,
            parent_id: None,
            deadline: None,
            idempotency_key: (key.len() <= 128).then_some(key),
        };
        let submitted = self
            .submit(caller, new)
            .await
            .map_err(|e| from_api(e, &message.message_id))?;
        self.get(caller, submitted.task_id)
            .await
            .map_err(|e| from_api(e, &submitted.task_id.to_string()))
    }

    /// A task sent through `agent`'s endpoint; any other id is not found.
    async fn a2a_task(&self, caller: &Caller, agent: &Agent, id: &str) -> Result<Task, A2aFailure> {
        let Ok(uuid) = id.parse::<Uuid>() else {
            return Err(RpcError::task_not_found(id).into());
        };
        let task = self.get(caller, uuid).await.map_err(|e| from_api(e, id))?;
        let sent_to = task
            .metadata
            .get(METADATA_KEY)
            .and_then(|a| a.get("agentId"))
            .and_then(Value::as_str);
        if sent_to != Some(agent.id.to_string().as_str()) {
            return Err(RpcError::task_not_found(id).into());
        }
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_need_their_permission_and_errors_keep_their_meaning() {
        assert_eq!(permission_for("SendMessage"), Permission::TaskSubmit);
        assert_eq!(permission_for("CancelTask"), Permission::TaskCancel);
        assert_eq!(permission_for("GetTask"), Permission::TaskRead);
        assert_eq!(permission_for("ListTasks"), Permission::TaskRead);
        let code = |err: ApiError| match from_api(err, "t") {
            A2aFailure::Rpc(e) => Some(e.code),
            A2aFailure::Http(_) => None,
        };
        assert_eq!(
            code(ApiError::not_found("x")),
            Some(jsonrpc::TASK_NOT_FOUND)
        );
        assert_eq!(
            code(ApiError::conflict("x")),
            Some(jsonrpc::TASK_NOT_CANCELABLE)
        );
        assert_eq!(
            code(ApiError::invalid("f", "x")),
            Some(jsonrpc::INVALID_PARAMS)
        );
        assert_eq!(
            code(ApiError::forbidden("policy")),
            None,
            "refusals keep HTTP 403"
        );
    }
}
